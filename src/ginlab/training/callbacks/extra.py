"""Lightning callbacks a config can add by name: training_loop.callbacks = ["lr_monitor"]."""

from pytorch_lightning.callbacks import LearningRateMonitor, StochasticWeightAveraging

from ginlab.registry import register_callback

register_callback("lr_monitor")(LearningRateMonitor)
register_callback("swa")(StochasticWeightAveraging)

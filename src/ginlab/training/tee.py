"""Tee: everything the process prints (Python, C extensions, worker processes) also goes to log.txt.

File descriptors 1 and 2 are redirected into pipes; a thread appends each chunk to log.txt once the run
folder exists, then copies it to the terminal. Output from before that moment is kept in memory and written
first, so log.txt holds the whole session.
"""

import os
import sys
import threading


class Tee:
    def __init__(self):
        self._file = None
        self._buffer = []
        self._lock = threading.Lock()
        self._threads = []
        self._saved = {}

    def start(self) -> "Tee":
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            self._saved[fd] = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=self._copy, args=(read_end, self._saved[fd]), daemon=True)
            thread.start()
            self._threads.append(thread)
        # Python would block-buffer stdout into a pipe; line buffering keeps the log in step with the run.
        sys.stdout.reconfigure(line_buffering=True)
        return self

    def attach(self, path) -> None:
        """Start appending to `path` (after what was printed so far)."""
        with self._lock:
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115  (appended to until stop())
            for chunk in self._buffer:
                self._file.write(chunk)
            self._buffer = []

    def _copy(self, read_end: int, terminal: int) -> None:
        terminal_open = True
        while chunk := os.read(read_end, 65536):
            # log.txt first: a kill between the two writes must not lose a line the terminal already showed.
            with self._lock:
                if self._file is not None:
                    self._file.write(chunk)
                else:
                    self._buffer.append(chunk)
            if terminal_open:
                try:
                    os.write(terminal, chunk)
                except OSError:  # the terminal went away (closed pipe, hung-up ssh): keep logging to the file
                    terminal_open = False
        os.close(read_end)

    def stop(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's last write end: the copy thread sees end of file
        for thread in self._threads:
            thread.join(timeout=5)
        for saved in self._saved.values():
            os.close(saved)
        if self._file is not None:
            self._file.close()

"""Filter expressions on the runs table: `Adam.lr < 0.001 and best/val_acc > 0.9`.

The syntax is Python's for comparisons (chains allowed), `and`, `or`, `not`, `in [...]`, arithmetic and
literals. Column names are written as they are (`Adam.lr`, `best/val_acc`, `eval/best-test/test_acc`), in
backticks when in doubt, or by their last part when only one column ends with it (`lr` for `Adam.lr`).
Nothing is executed: the expression is parsed with `ast` and every node is evaluated as a pandas operation
on whole columns, so a run whose value is missing simply does not match.
"""

from __future__ import annotations

import ast
import difflib
import operator
import re

import numpy as np
import pandas as pd

from ginlab.board.paths import BoardError

KEYWORDS = frozenset({"and", "or", "not", "in", "is", "True", "False", "None", "nan"})
COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}  # fmt: skip
ARITHMETIC = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod,
}  # fmt: skip
IDENTIFIER = re.compile(r"[A-Za-z_][\w.\-/]*")
EXAMPLE = "Adam.lr < 0.001 and best/val_acc > 0.9"


class ExpressionError(BoardError):
    """A filter expression that cannot be read or evaluated; the message says where and how to fix it."""


def filter_mask(frame: pd.DataFrame, text: str) -> pd.Series:
    """A boolean mask of the rows for which the expression `text` holds.

    Raises:
        ExpressionError: bad syntax, an unknown column (close names are suggested), or an operation the
            values do not support (comparing text with a number).
    """
    source, columns = _substitute(text, list(frame.columns))
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(
            f"filter {text!r} is not a valid expression ({error.msg}); write e.g. {EXAMPLE}"
        ) from None
    try:
        result = _evaluate(tree.body, frame, columns, text)
    except ExpressionError:
        raise
    except (TypeError, ValueError) as error:
        raise ExpressionError(
            f"filter {text!r} cannot be evaluated: {error}. Compare numbers with numbers and text with "
            'quoted text, e.g. data.name == "digits"'
        ) from None
    if not isinstance(result, pd.Series):
        result = pd.Series(bool(result), index=frame.index)
    if result.dtype != bool:
        if result.dtype == object or str(result.dtype).startswith(("str", "string")):
            raise ExpressionError(f"filter {text!r} gives values, not true or false; write e.g. {EXAMPLE}")
        result = result.fillna(False).astype(bool)
    return result


def _substitute(text: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """Replace column names (and `backticked` names) by placeholders Python can parse."""
    by_length = sorted(names, key=len, reverse=True)
    suffixes: dict[str, list[str]] = {}
    for name in names:
        for separator in (".", "/"):
            if separator in name:
                suffixes.setdefault(name.rsplit(separator, 1)[1], []).append(name)
    out, columns, position = [], {}, 0

    def placeholder(name: str) -> str:
        key = f"_c{len(columns)}"
        columns[key] = name
        return key

    while position < len(text):
        char = text[position]
        if char in "\"'":  # a string literal: copied as it is
            end = text.find(char, position + 1)
            end = len(text) if end < 0 else end + 1
            out.append(text[position:end])
            position = end
        elif char == "`":
            end = text.find("`", position + 1)
            if end < 0:
                raise ExpressionError(f"filter {text!r} has an opening ` without a closing one")
            name = text[position + 1 : end]
            if name not in names:
                raise ExpressionError(_unknown(name, names, text))
            out.append(placeholder(name))
            position = end + 1
        elif (char.isalpha() or char == "_") and (position == 0 or not (text[position - 1].isalnum())):
            match = next(
                (
                    name
                    for name in by_length
                    if text.startswith(name, position) and _ends(text, position + len(name))
                ),
                None,
            )
            if match is None:
                word = IDENTIFIER.match(text, position).group(0).rstrip(".-/")
                plain = re.match(r"[A-Za-z_]\w*", word).group(0)
                if plain in KEYWORDS or (plain == word and plain in ("inf",)):
                    out.append(plain)
                    position += len(plain)
                    continue
                if len(suffixes.get(word, [])) == 1:
                    match = suffixes[word][0]
                    out.append(placeholder(match))
                    position += len(word)
                    continue
                raise ExpressionError(_unknown(word, names, text))
            out.append(placeholder(match))
            position += len(match)
        else:
            out.append(char)
            position += 1
    return "".join(out), columns


def _ends(text: str, position: int) -> bool:
    return position >= len(text) or not (text[position].isalnum() or text[position] in "_./-")


def _unknown(word: str, names: list[str], text: str) -> str:
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; the columns are the table's column names"
    return f"filter {text!r} names {word!r}, which is not a column{hint}"


def _evaluate(node: ast.AST, frame: pd.DataFrame, columns: dict[str, str], text: str):
    recurse = lambda child: _evaluate(child, frame, columns, text)  # noqa: E731
    if isinstance(node, ast.Name):
        if node.id in columns:
            return frame[columns[node.id]]
        if node.id == "nan":
            return np.nan
        raise ExpressionError(_unknown(node.id, list(frame.columns), text))
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [recurse(element) for element in node.elts]
    if isinstance(node, ast.BoolOp):
        values = [_as_mask(recurse(value), frame) for value in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.UnaryOp):
        value = recurse(node.operand)
        if isinstance(node.op, ast.Not):
            return ~_as_mask(value, frame)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
    if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
        return ARITHMETIC[type(node.op)](recurse(node.left), recurse(node.right))
    if isinstance(node, ast.Compare):
        left, result = recurse(node.left), None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = recurse(comparator)
            part = _compare(op, left, right, frame, text)
            result = part if result is None else result & part
            left = right
        return result
    raise ExpressionError(
        f"filter {text!r} uses {ast.unparse(node)!r}, which filters cannot do; they compare columns with "
        f"values and combine with and/or/not, e.g. {EXAMPLE}"
    )


def _compare(op: ast.cmpop, left, right, frame: pd.DataFrame, text: str) -> pd.Series:
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(right, list) or not isinstance(left, pd.Series):
            raise ExpressionError(f"filter {text!r}: write `column in [value, value]`")
        mask = left.isin(right)
        return ~mask if isinstance(op, ast.NotIn) else mask
    if isinstance(op, (ast.Is, ast.IsNot)) and right is None:
        mask = left.isna() if isinstance(left, pd.Series) else pd.Series(left is None, index=frame.index)
        return ~mask if isinstance(op, ast.IsNot) else mask
    if type(op) not in COMPARE:
        raise ExpressionError(f"filter {text!r}: unsupported comparison {type(op).__name__}")
    return _as_mask(COMPARE[type(op)](left, right), frame)


def _as_mask(value, frame: pd.DataFrame) -> pd.Series:
    if isinstance(value, pd.Series):
        return value.fillna(False).astype(bool)
    return pd.Series(bool(value), index=frame.index)

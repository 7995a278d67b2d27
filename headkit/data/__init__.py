"""Data: numpy checks of features and labels, and the input functions both backends read."""

from headkit.data.checks import prepare, series_to_numpy
from headkit.data.inputs import input_fn, input_fn_from_dataframe

__all__ = ["input_fn", "input_fn_from_dataframe", "prepare", "series_to_numpy"]

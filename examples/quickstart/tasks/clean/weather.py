# /// task
# extends = "clean.base"
# inputs = ["data/weather.csv"]
# outputs = ["out/weather.clean.csv"]
# [params]
# value_column = "temp_c"
# decimals = 1
# ///
"""Temperatures: the sensors report values in tenths; round half away from zero."""

import math


def parse_value(text: str, decimals: int) -> float:
    scale = 10**decimals
    x = float(text) * scale
    return math.copysign(math.floor(abs(x) + 0.5), x) / scale

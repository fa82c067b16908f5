# /// task
# after = ["fit"]
# outputs = ["out/predictions.csv"]
# [params]
# xs = [7, 8, 10]
# ///
"""Use the fitted line (an instance of fit's own class) to predict new values."""

from pathlib import Path


def run(fit, xs: list[float], outputs: list[Path]) -> dict[str, float]:
    predictions = {str(x): fit.predict(x) for x in xs}
    outputs[0].write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in predictions.items()))
    return predictions

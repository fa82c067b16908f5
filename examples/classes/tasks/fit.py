# /// task
# inputs = ["data/*.csv"]
# outputs = ["out/fit.txt"]
# ///
"""Fit a line to every data file, in parallel, and return the fit as the task's own class."""

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Line:
    """A fitted line. Its instances are this task's output: downstream tasks receive them,
    and `watchrun show fit` prints them, because the class pickles by reference
    (`watchrun.task.fit.Line`), like any module's."""

    slope: float
    intercept: float
    points: int

    def predict(self, x: float) -> float:
        return round(self.slope * x + self.intercept, 3)


def read_points(path: Path) -> list[tuple[float, float]]:
    rows = path.read_text().splitlines()[1:]
    return [(float(x), float(y)) for x, y in (row.split(",") for row in rows if row)]


def least_squares(points: list[tuple[float, float]]) -> Line:
    """Runs in a pool's worker process: a function defined in the task travels there too."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return Line(round(slope, 4), round(mean_y - slope * mean_x, 4), n)


def run(inputs: list[Path], outputs: list[Path]) -> Line:
    with ProcessPoolExecutor(2) as pool:
        lines = list(pool.map(least_squares, [read_points(p) for p in inputs]))
    best = max(lines, key=lambda line: line.points)
    # `outputs` are the paths the header declares: the task writes each one
    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    outputs[0].write_text(f"y = {best.slope} * x + {best.intercept} ({best.points} points)\n")
    return best

# /// task
# abstract = true
# [params]
# value_column = "value"
# drop_empty = true
# decimals = 2
# ///
"""A template for cleaning one CSV table; the variants set the file and the column."""

from pathlib import Path

from lib.tables import read_rows, write_rows


def parse_value(text: str, decimals: int) -> float:
    return round(float(text), decimals)


def run(inputs: list[Path], value_column: str, drop_empty: bool, decimals: int) -> dict:
    rows = []
    for path in inputs:
        for row in read_rows(path):
            raw = row[value_column].strip()
            if not raw and drop_empty:
                continue
            row[value_column] = parse_value(raw, decimals) if raw else None
            rows.append(row)
    out = Path("out") / (inputs[0].stem + ".clean.csv")
    write_rows(out, rows)
    values = [r[value_column] for r in rows if r[value_column] is not None]
    return {"table": inputs[0].stem, "rows": len(rows), "values": values}

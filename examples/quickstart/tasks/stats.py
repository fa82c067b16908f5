# /// task
# after = ["clean.sales", "clean.weather"]
# ///
from lib.tables import mean


def summarise(table: dict) -> dict:
    values = table["values"]
    return {
        "rows": table["rows"],
        "mean": round(mean(values), 3),
        "min": min(values),
        "max": max(values),
    }


def run(sales: dict, weather: dict) -> dict:
    return {t["table"]: summarise(t) for t in (sales, weather)}

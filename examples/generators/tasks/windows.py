# /// task
# kind = "generator"
# after = {request = "enrich.request"}
# [params]
# minutes = 60
# ///
"""Group consecutive requests into time windows: an inner generator in the scope of `requests`.

run() is called once per request, in order, in one process, so `current` carries over from
call to call. It yields a window when the first request of the next one arrives (zero or one
value per call); finish() is called once the requests are exhausted and yields the last,
still open window.
"""

current: list[dict] = []


def window_of(request: dict, minutes: int) -> str:
    """'2024-05-08T14:37:05Z' -> '2024-05-08T14:00' for 60-minute windows."""
    day, clock = request["time"].split("T")
    hour, minute = int(clock[:2]), int(clock[3:5])
    start = (hour * 60 + minute) // minutes * minutes
    return f"{day}T{start // 60:02}:{start % 60:02}"


def close_window(minutes: int) -> dict:
    window = {"start": window_of(current[0], minutes), "minutes": minutes,
              "requests": list(current)}
    current.clear()
    return window


def run(request: dict, minutes: int):
    if current and window_of(current[0], minutes) != window_of(request, minutes):
        yield close_window(minutes)
    current.append(request)


def finish(minutes: int):
    if current:
        yield close_window(minutes)

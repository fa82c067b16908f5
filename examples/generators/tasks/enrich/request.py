# /// task
# extends = "enrich.base"
# [params]
# slow_ms = 500  # our latency budget; the nearest definition wins over the template's 1000
# ///

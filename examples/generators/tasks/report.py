# /// task
# after = ["summary", "services"]
# outputs = ["out/report.md"]
# [params]
# title = "Traffic report"
# ///
"""Write the summary as Markdown (a normal task again: it runs once, after the gather)."""

from pathlib import Path


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def run(summary: dict, services: dict, title: str) -> str:
    s = summary
    lines = [
        f"# {title}",
        "",
        f"{s['requests']} requests in {s['windows']} windows, {s['first']} to {s['last']}: "
        f"{s['errors']} server errors ({percent(s['errors'], s['requests'])}), "
        f"{s['slow']} slow.",
        "",
        "## Services",
        "",
        "| service | team | requests | errors | slow | p50 ms | p95 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in s["services"].items():
        team = services["teams"].get(name, "unknown")
        lines.append(f"| {name} | {team} | {row['requests']} | {row['errors']} | {row['slow']} "
                     f"| {row['p50_ms']} | {row['p95_ms']} |")
    lines += ["", "## Worst windows", "", "| window | requests | errors | slow | p95 ms |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for w in s["worst_windows"]:
        lines.append(f"| {w['start']} | {w['requests']} | {w['errors']} | {w['slow']} "
                     f"| {w['p95_ms']} |")
    text = "\n".join(lines) + "\n"
    Path("out").mkdir(exist_ok=True)
    Path("out/report.md").write_text(text)
    print(f"wrote out/report.md ({s['requests']} requests)")
    return text

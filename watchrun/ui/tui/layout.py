"""Lane layout of the DAG, drawn to the left of one row per task (like `git log --graph`).

Pure data in, pure data out: the widget only turns cells into glyphs and colours.

The picture, read top to bottom (upstream above downstream):

- A node's outgoing edges leave its marker downward and run in one *lane* (a column) that the
  node owns, however many children it has: each child below taps the lane from its own row.
- A lane carries a set of sources to a set of remaining targets, and means every source feeds
  every target. Two lanes with the same remaining targets are merged (fan-in shares one lane):
  in some row below, one lane turns (`┘`/`└`) into the other (`├`/`┤`), away from the row's node.
- In a node's row, every horizontal line flows into that node: those are its incoming edges.
  A lane that ends there turns into it; one that goes on to later targets tees off.
- Where a horizontal line passes a lane it does not join, the cell is a *crossing* (`CROSS`):
  the lane is drawn on top and the line passes under it.

Cells are bit sets of the directions a cell connects to. Lane `k` sits at character `2k`; the
characters in between only ever carry horizontal lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
NODE = 16  # the task's own marker
CROSS = 32  # a lane passing under a horizontal line: the two do not connect
HORIZONTAL = LEFT | RIGHT

_GLYPHS = {
    0: " ",
    UP: "╵",
    DOWN: "╷",
    LEFT: "╴",
    RIGHT: "╶",
    UP | DOWN: "│",
    LEFT | RIGHT: "─",
    UP | RIGHT: "└",
    UP | LEFT: "┘",
    DOWN | RIGHT: "┌",
    DOWN | LEFT: "┐",
    UP | DOWN | RIGHT: "├",
    UP | DOWN | LEFT: "┤",
    UP | LEFT | RIGHT: "┴",
    DOWN | LEFT | RIGHT: "┬",
    UP | DOWN | LEFT | RIGHT: "┼",
}


@dataclass(frozen=True)
class GraphRow:
    name: str
    cells: tuple[int, ...]  # one per character; may be shorter than the layout's width
    node: int  # index of the node's marker in `cells`


@dataclass(frozen=True)
class GraphLayout:
    rows: tuple[GraphRow, ...]
    width: int  # characters: the widest row

    def index(self) -> dict[str, int]:
        return {row.name: i for i, row in enumerate(self.rows)}


def glyph(cell: int) -> str:
    """The box-drawing character of a line cell (not of a node marker)."""
    if cell & CROSS:
        return "│"
    return _GLYPHS[cell & (UP | DOWN | LEFT | RIGHT)]


def render_row(row: GraphRow, width: int, marker: str = "●") -> str:
    """The graph part of a row as text, padded to `width`."""
    text = "".join(marker if i == row.node else glyph(c) for i, c in enumerate(row.cells))
    return text.ljust(width)


def order_rows(names: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """A topological order that keeps chains together: after a node comes the first of its
    children that became ready, depth first, so a lane stays short. Ties follow `names`.
    Nodes caught in a cycle (a project error) are appended in their given order."""
    position = {name: i for i, name in enumerate(names)}
    children: dict[str, list[str]] = {name: [] for name in names}
    waiting = dict.fromkeys(names, 0)
    for parent, child in _clean_edges(edges, position):
        children[parent].append(child)
        waiting[child] += 1
    for kids in children.values():
        kids.sort(key=position.__getitem__)
    stack = [name for name in reversed(names) if waiting[name] == 0]
    order: list[str] = []
    while stack:
        name = stack.pop()
        order.append(name)
        ready = []
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
        stack.extend(reversed(ready))
    if len(order) < len(names):
        placed = set(order)
        order.extend(name for name in names if name not in placed)
    return order


def _clean_edges(edges: Iterable[tuple[str, str]], position: dict[str, int]
                 ) -> list[tuple[str, str]]:
    """Known, distinct, non-self edges."""
    seen: set[tuple[str, str]] = set()
    result = []
    for parent, child in edges:
        if parent == child or parent not in position or child not in position:
            continue
        if (parent, child) not in seen:
            seen.add((parent, child))
            result.append((parent, child))
    return result


class _Lane:
    __slots__ = ("born", "col", "key", "sources")

    def __init__(self, source: str, targets: frozenset[str], col: int, born: int) -> None:
        self.sources = {source}
        self.key = targets  # the targets still below: lanes with equal keys may merge
        self.col = col
        self.born = born  # the row of its first source: it starts below that row


def layout(rows: Sequence[str], edges: Iterable[tuple[str, str]]) -> GraphLayout:
    """Lay out `rows` (a topological order, e.g. from `order_rows`) with their edges. Edges that
    point upward (only possible in a cycle, a project error) are not drawn."""
    return _Layouter(rows, edges).run()


class _Layouter:
    """One pass down the rows, keeping the lanes alive between two rows."""

    def __init__(self, rows: Sequence[str], edges: Iterable[tuple[str, str]]) -> None:
        self.rows = list(rows)
        position = {name: i for i, name in enumerate(self.rows)}
        self.children: dict[str, set[str]] = {}
        for parent, child in _clean_edges(edges, position):
            if position[parent] < position[child]:
                self.children.setdefault(parent, set()).add(child)
        self.columns: list[_Lane | None] = []
        self.waiting: dict[str, list[_Lane]] = {}  # target -> the lanes that lead to it
        self.by_key: dict[frozenset[str], list[_Lane]] = {}
        self.crowded: set[frozenset[str]] = set()  # keys of two lanes or more: merge them

    def run(self) -> GraphLayout:
        result = [self._row(r, name) for r, name in enumerate(self.rows)]
        width = max((len(row.cells) for row in result), default=0)
        return GraphLayout(tuple(result), width)

    def _row(self, r: int, name: str) -> GraphRow:
        incoming = sorted(self.waiting.pop(name, ()), key=lambda lane: lane.col)
        for lane in incoming:
            self._rekey(lane, lane.key - {name})
        node = self._node_column([lane.col for lane in incoming],
                                 [lane.col for lane in incoming if not lane.key])
        while len(self.columns) <= node:
            self.columns.append(None)
        cells = [0] * (2 * len(self.columns) - 1)
        inbound = {lane.col for lane in incoming}
        passing = {c for c, lane in enumerate(self.columns) if lane is not None} - inbound
        for col in passing:
            cells[2 * col] = UP | DOWN
        self._draw_node(cells, node, incoming, passing, name)
        self._merge(cells, r, passing)
        for lane in incoming:
            if not lane.key:
                self._drop(lane)
        kids = self.children.get(name)
        if kids:
            self._add(_Lane(name, frozenset(kids), node, r))
        while self.columns and self.columns[-1] is None:
            self.columns.pop()
        while cells and cells[-1] == 0:
            cells.pop()
        return GraphRow(name, tuple(cells), 2 * node)

    # -- lane bookkeeping ----------------------------------------------------------------------
    def _add(self, lane: _Lane) -> None:
        self.columns[lane.col] = lane
        for target in lane.key:
            self.waiting.setdefault(target, []).append(lane)
        self._file(lane)

    def _drop(self, lane: _Lane) -> None:
        """A lane ends: it reached its last target, or was merged into another."""
        self.columns[lane.col] = None
        for target in lane.key:
            self.waiting[target].remove(lane)
        self._unfile(lane)

    def _rekey(self, lane: _Lane, key: frozenset[str]) -> None:
        self._unfile(lane)
        lane.key = key
        if key:
            self._file(lane)

    def _file(self, lane: _Lane) -> None:
        group = self.by_key.setdefault(lane.key, [])
        group.append(lane)
        if len(group) > 1:
            self.crowded.add(lane.key)

    def _unfile(self, lane: _Lane) -> None:
        group = self.by_key.get(lane.key)
        if group is None or lane not in group:
            return
        group.remove(lane)
        if len(group) < 2:
            self.crowded.discard(lane.key)
        if not group:
            del self.by_key[lane.key]

    # -- drawing -------------------------------------------------------------------------------
    def _node_column(self, incoming: list[int], ending: list[int]) -> int:
        """Where the node sits: in a lane that ends here if there is one, else in a free column,
        choosing the one that keeps its horizontal lines shortest (then the leftmost)."""
        if ending:
            candidates = ending
        else:
            candidates = [c for c, lane in enumerate(self.columns) if lane is None]
            candidates.append(len(self.columns))
        if not incoming:
            return candidates[0]
        low, high = incoming[0], incoming[-1]
        return min(candidates, key=lambda c: (max(high, c) - min(low, c), abs(c - low), c))

    def _draw_node(self, cells: list[int], node: int, incoming: list[_Lane],
                   passing: set[int], name: str) -> None:
        x = 2 * node
        mark = NODE | (DOWN if name in self.children else 0)
        for lane in incoming:
            if lane.col == node:
                mark |= UP
                continue
            lx = 2 * lane.col
            cells[lx] |= UP | (DOWN if lane.key else 0) | (RIGHT if lx < x else LEFT)
            mark |= LEFT if lx < x else RIGHT
            _horizontal(cells, lx, x, passing)
        cells[x] = mark

    def _merge(self, cells: list[int], r: int, passing: set[int]) -> None:
        """Merge lanes that now lead to the same targets, where the row has room."""
        for key in sorted(self.crowded, key=lambda k: min(lane.col for lane in self.by_key[k])):
            lanes = sorted((lane for lane in self.by_key[key]
                            if lane.col in passing and lane.born < r), key=lambda ln: ln.col)
            if len(lanes) < 2:
                continue
            keep = lanes[0]
            for other in lanes[1:]:
                if not self._join(cells, keep, other, passing):
                    keep = other

    def _join(self, cells: list[int], keep: _Lane, gone: _Lane, passing: set[int]) -> bool:
        """Turn lane `gone` into lane `keep` (to its left) in this row, if the cells between
        them carry no other line."""
        a, b = 2 * keep.col, 2 * gone.col
        if any(cells[i] & (HORIZONTAL | NODE) for i in range(a, b + 1)):
            return False
        cells[a] |= RIGHT
        cells[b] = UP | LEFT
        _horizontal(cells, a, b, passing)
        keep.sources |= gone.sources
        passing.discard(gone.col)
        self._drop(gone)
        return True


def _horizontal(cells: list[int], a: int, b: int, passing: set[int]) -> None:
    """A line strictly between characters a and b, passing under the lanes it crosses."""
    for i in range(min(a, b) + 1, max(a, b)):
        cells[i] |= HORIZONTAL
        if i % 2 == 0 and i // 2 in passing:
            cells[i] |= CROSS

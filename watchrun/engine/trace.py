"""The build trace: what a build's decisions rested on, sealed into the null-build proof.

A build that succeeded leaves in its state folder the evidence that everything is now clean,
as ninja's build log lets it answer "no work to do" without reloading its manifest. Each stage
that observes files hands the trace what it saw, when it saw it:

- the session, the stat keys of the settings files, taken before they are read;
- the loader, the task files it listed and the stat keys of every file the project was built
  from (and the places where a local import looked and found nothing);
- the plan (the resolver), every input and output it hashed, with the hash it used, and what
  each task's input patterns matched; and whether any of it moved while it looked;
- the hasher, the stat key under which each of those hashes is known;
- the build's end, how many units a null build finds clean and what it prints.

`seal()` writes the proof once the results it speaks of are committed (see `state/proof.py`
for its form); `watchrun/nullproof.py` checks it on the next `watchrun build`. Anything that
makes the evidence incomplete (a file that changed under the build, a `--set`, a state folder
the console script cannot find before the settings are read) spoils the trace: no proof, and
the next build decides for itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from watchrun.paths import STATE_DIR
from watchrun.project.inputs import has_magic
from watchrun.project.snapshot import ProjectFiles
from watchrun.state.hashing import FileHasher
from watchrun.state.proof import (
    NO_KEY,
    Proof,
    identity,
    join,
    pack_keys,
    site_mtimes,
    write_proof,
)
from watchrun.state.statkeys import CacheEntry, StatKey

Expansion = tuple[tuple[str, ...], tuple[str, ...]]  # input patterns, the paths they matched


class BuildTrace:
    """The evidence gathered during one build, then sealed (or spoiled)."""

    def __init__(self, root: str, state_dir: str, settings: Mapping[str, StatKey | None]
                 ) -> None:
        self.root = root
        self.state_dir = state_dir
        self._settings = dict(settings)
        self._folders: list[str] = []
        self._files: ProjectFiles | None = None
        self._observed: Mapping[str, str | None] = {}
        self._expansions: list[Expansion] = []
        self._keys: list[StatKey] = []
        self._below: dict[str, CacheEntry] = {}
        self._finish: tuple[tuple[str, ...], int, list[tuple[str, str]] | None, str] | None = None
        self._values: dict[str, str] = {}
        # the console script looks for the proof in the default state folder only
        self.spoiled = state_dir != os.path.join(root, STATE_DIR)

    def spoil(self) -> None:
        """The build will not have seen everything a null build would: leave no proof."""
        self.spoiled = True

    def project_loaded(self, folders: Iterable[str], files: ProjectFiles | None) -> None:
        """From the loader: the task folders and what the project is known to be built from
        (None: not known, as after a load that found files changing)."""
        self._folders = list(folders)
        self._files = files
        if files is None:
            self.spoil()

    def files_observed(self, observed: Mapping[str, str | None],
                       expansions: Iterable[Expansion], unsteady: bool) -> None:
        """From the plan: absolute path -> the hash its decisions used (None: missing), each
        task's input patterns with what they matched, and whether a path gave two answers."""
        self._observed = observed
        self._expansions = list(expansions)
        if unsteady:
            self.spoil()

    def hashes_known(self, hasher: FileHasher) -> None:
        """From the hasher: the stat key under which each observed hash is known. A hash
        without a settled key (the file changed just before it was read) is hashed again by
        the check; a folder's files are kept with their own keys."""
        keys = self._keys = []
        for path, digest in self._observed.items():
            entry = hasher.cached_entry(path)
            if entry is not None and entry[4] == digest:
                keys.append(entry[:4])
                continue
            keys.append(NO_KEY)
            if digest is not None and not hasher.knows_file(path) and os.path.isdir(path):
                self._below.update(hasher.cached_below(path))

    def build_finished(self, targets: Iterable[str], clean_units: int,
                       events: list[tuple[str, str]] | None, summary: str,
                       values: Mapping[str, str]) -> None:
        """From the end of a build that succeeded: the targets as given, the units a null
        build finds clean, the `--json` lines of a build that ran nothing without their times
        (None: it ran something, so a null build prints other events), the summary line
        a null build prints, and the value of each task outside any scope (what a build
        after an edit elsewhere takes for the tasks the proof still covers)."""
        self._finish = (tuple(targets), clean_units, events, summary)
        self._values = dict(values)

    def seal(self) -> None:
        """Write the proof, once the results it speaks of are committed: only after a build
        that finished and was not spoiled."""
        if self._finish is None or self.spoiled or self._files is None:
            return
        write_proof(self.state_dir, self._proof(self._files, *self._finish))

    def _proof(self, files: ProjectFiles, targets: tuple[str, ...], units: int,
               events: list[tuple[str, str]] | None, summary: str) -> Proof:
        paths = list(self._observed)
        return {
            "id": identity(self.root, targets), "db": None,  # see write_proof
            "configs": self._settings, "folders": self._folders, "state_dir": self.state_dir,
            "discovered": join(files.discovered), "project": join(files.stats),
            "project_keys": pack_keys(files.stats.values()), "absent": list(files.absent),
            "site": site_mtimes(), "inputs": self._unsettled_expansions(),
            "observed": join(paths), "hashes": join(self._observed[p] or "" for p in paths),
            "keys": pack_keys(self._keys), "below": self._below, "units": units,
            "summary": summary,
            "values": (join(self._values), join(self._values.values())),
            "events": None if events is None else "\n".join(f"{h}\0{t}" for h, t in events),
        }

    def _unsettled_expansions(self) -> list[Expansion]:
        """The input expansions the observed files do not already settle: a task's plain
        input paths (no glob) are each among the observed paths, whose existence the check
        looks at."""
        observed, root = self._observed, self.root
        return [(patterns, matched) for patterns, matched in self._expansions
                if any(has_magic(p) for p in patterns)
                or not all(os.path.join(root, p) in observed for p in patterns)]

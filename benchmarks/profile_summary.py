"""Summarise a py-spy profile (speedscope JSON): where a process spent its time, by function and by package.

Usage::

    python benchmarks/profile_summary.py PROFILE.speedscope.json [--top 15]

py-spy samples the stacks of a process's threads (``webhook_load.py`` records with ``--gil``: only the thread that
holds the GIL, i.e. where a single server process's Python time goes). Samples are weighted by the time they stand
for. A function's *own* time is the share of samples in which it is the innermost frame; its *total* time the share
in which it is on the stack at all. The package view adds up own time by where the code lives: a third-party
distribution (``sqlalchemy``, ``uvicorn``), the project's packages (``zingyconn.hosts``, ``sandbox``) or a
standard-library module (``asyncio``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Project packages are split one level deeper, where the host path's parts live.
PROJECT_PACKAGES = ("zingyconn", "sandbox")


@dataclass(frozen=True)
class Summary:
    """The samples of one profile, counted by frame and by package."""

    samples: float
    own: Counter[str]
    total: Counter[str]
    packages: Counter[str]
    project_frames: frozenset[str]

    def top(self, count: int) -> list[dict[str, Any]]:
        """The *count* functions with the most own time: name, own and total in percent of all samples."""
        return [
            {"frame": frame, "own_pct": _pct(n, self.samples), "total_pct": _pct(self.total[frame], self.samples)}
            for frame, n in self.own.most_common(count)
        ]

    def project(self, count: int) -> list[dict[str, Any]]:
        """The *count* functions of the project's own packages with the most total time (the steps of a request)."""
        ranked = [(frame, n) for frame, n in self.total.most_common() if frame in self.project_frames][:count]
        return [
            {"frame": frame, "own_pct": _pct(self.own[frame], self.samples), "total_pct": _pct(n, self.samples)}
            for frame, n in ranked
        ]

    def by_package(self, count: int) -> list[dict[str, Any]]:
        """The *count* packages with the most own time, in percent of all samples."""
        return [{"package": name, "own_pct": _pct(n, self.samples)} for name, n in self.packages.most_common(count)]


def _pct(part: float, whole: float) -> float:
    return round(100 * part / max(1, whole), 1)


def package_of(path: str) -> str:
    """Where the code at *path* lives: a distribution, a project subpackage or a standard-library module."""
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else path
    for package in PROJECT_PACKAGES:
        if package in parts:
            rest = parts[len(parts) - parts[::-1].index(package) :]
            inner = rest[0].removesuffix(".py") if len(rest) > 1 else ""
            return f"{package}.{inner}" if inner else package
    if "lib" in parts:
        inside = [part for part in parts[parts.index("lib") + 1 :] if not part.startswith("python")]
        return inside[0].removesuffix(".py") if inside else path
    return path


def summarise(document: dict[str, Any]) -> Summary:
    """Count own and total time per frame, and own time per package, over every profile (thread) of *document*."""
    frames = document["shared"]["frames"]
    # A function, not a line: py-spy gives each line a function was sampled at its own frame.
    names = [f"{frame['name']} ({Path(frame.get('file', '?')).name})" for frame in frames]
    packages = [package_of(str(frame.get("file", "?"))) for frame in frames]
    pairs = zip(names, packages, strict=True)
    project = frozenset(name for name, package in pairs if package.startswith(PROJECT_PACKAGES))
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    samples = 0.0
    for profile in document["profiles"]:
        weights = profile.get("weights") or [1] * len(profile["samples"])
        for stack, weight in zip(profile["samples"], weights, strict=True):
            if not stack:
                continue
            samples += weight
            leaf = stack[-1]  # speedscope lists a stack from the outermost frame to the innermost
            own[names[leaf]] += weight
            by_package[packages[leaf]] += weight
            for name in {names[index] for index in stack}:
                total[name] += weight
    return Summary(samples, own, total, by_package, project)


def render(summary: Summary, *, top: int) -> str:
    """The summary as text: packages by own time, then the top frames."""
    lines = [f"{summary.samples:.1f} s sampled; own time by package:"]
    lines += [f"  {row['own_pct']:5.1f} %  {row['package']}" for row in summary.by_package(top)]
    lines.append("top functions by own time (own %, total %):")
    lines += [f"  {row['own_pct']:5.1f} {row['total_pct']:5.1f}  {row['frame']}" for row in summary.top(top)]
    lines.append("the project's functions by total time (own %, total %):")
    lines += [f"  {row['own_pct']:5.1f} {row['total_pct']:5.1f}  {row['frame']}" for row in summary.project(top)]
    return "\n".join(lines)


def load(path: Path) -> Summary:
    """Read and summarise the speedscope file at *path*."""
    return summarise(json.loads(path.read_text()))


def main() -> int:
    """Print the summary of the profile named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="A speedscope JSON file (py-spy record --format speedscope).")
    parser.add_argument("--top", type=int, default=15, help="How many frames and packages to list.")
    args = parser.parse_args()
    print(render(load(args.profile), top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

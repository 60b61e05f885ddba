"""Where the shared public corpus lives and how tests read it (in place, never copied)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def corpus_files() -> list[Path]:
    """Every .hl7 file in the corpus, sorted for stable test ids."""
    files = sorted(CORPUS.glob("**/*.hl7"))
    assert files, f"corpus not found at {CORPUS}"
    return files


def read(relative: str) -> bytes:
    """The raw bytes of one corpus file, e.g. ``edge/ipf-adt-a01-missing-pid.hl7``."""
    return (CORPUS / relative).read_bytes()


def file_id(path: Path) -> str:
    """A short pytest id: folder/name."""
    return f"{path.parent.name}/{path.name}"


def naive_control_id(raw: bytes) -> str:
    """MSH-10 by the dumbest possible split of the first line, as an independent oracle."""
    first = raw.lstrip().replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r", 1)[0]
    fields = first.split(first[3:4])
    return fields[9].decode("latin-1") if len(fields) > 9 else ""

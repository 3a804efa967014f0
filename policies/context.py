"""What a check sees: the filtered manifest (as a DuckDB view), the recipe, the licence knowledge base."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.records.dataset import Recipe, SourceRef
from registry.records.policy import Evidence, LicenceBase

EVIDENCE_CAP = 20  # offending sample ids listed per rule; the count is always complete


@dataclass
class Outcome:
    """A check's verdict before severity and waivers are applied."""

    ok: bool
    message: str
    measured: int | float | str | None = None
    threshold: int | float | str | None = None
    evidence: Evidence = field(default_factory=Evidence)
    ran: bool = True  # False: the inputs the check needs are missing; ``message`` says which
    applies: bool = True  # False: the rule does not apply to this dataset; ``message`` says why

    @classmethod
    def not_run(cls, why: str, threshold: int | float | str | None = None) -> Outcome:
        """A check that could not run: nothing was measured, so it is neither a pass nor a failure."""
        return cls(False, f"not run: {why}", threshold=threshold, ran=False)

    @classmethod
    def not_applicable(cls, why: str) -> Outcome:
        """A rule that does not apply to this dataset: nothing to measure, and nothing missing."""
        return cls(False, f"not applicable: {why}", applies=False)


@dataclass
class Context:
    ws: Path
    manifest: Path
    recipe: Recipe
    kb: LicenceBase
    con: Any  # a DuckDB connection with the manifest as view ``manifest``

    # Query results more than one rule reads, by the name of what they are (``once``)
    _read: dict[str, list] = field(default_factory=dict, repr=False)

    def once(self, name: str, sql: str) -> list[tuple]:
        """The rows of ``sql``, queried once for every rule that asks for ``name`` (issue 22: the three
        licence rules and the three prompt rules each scanned the whole manifest for the same rows)."""
        if name not in self._read:
            self._read[name] = self.con.sql(sql).fetchall()
        return list(self._read[name])

    def generators(self) -> list[dict]:
        """Generators that made the images, as recorded in the manifest, one row each."""
        rows = self.once(
            "generators",
            "SELECT generator_name, generator_licence, weights_digest, count(*) AS n "
            "FROM manifest GROUP BY ALL ORDER BY generator_name",
        )
        return [dict(name=r[0], licence=r[1], weights_digest=r[2], images=r[3]) for r in rows]

    def sources(self, with_generator_training: bool = True) -> list[SourceRef]:
        out = list(self.recipe.sources)
        if with_generator_training:
            out += self.recipe.generator.training_sources
        return out

    def one(self, sql: str, params: list | None = None) -> tuple:
        """The single row of ``sql``, fetched to the end. ``execute(...).fetchone()`` would leave the
        result open on the shared connection, and DuckDB (2.0) then refuses the next check's query
        with ResourceInUseException (issue 11: a diffusers-made manifest, whose representation check
        returns right after one such fetchone, crashed the provenance check's DESCRIBE)."""
        rows = self.con.execute(sql, params or []).fetchall()
        if len(rows) != 1:
            raise ValueError(f"expected one row, got {len(rows)}: {sql}")
        return rows[0]

    def sample_ids(self, where: str, params: list | None = None) -> Evidence:
        """Evidence for the samples matching ``where``: the total count and the first ids."""
        n = self.one(f"SELECT count(*) FROM manifest WHERE {where}", params)[0]
        ids = self.con.execute(
            f"SELECT sample_id FROM manifest WHERE {where} ORDER BY index LIMIT {EVIDENCE_CAP}", params or []
        ).fetchall()
        return Evidence(count=n, sample_ids=[r[0] for r in ids])

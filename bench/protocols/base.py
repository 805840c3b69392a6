"""What a protocol is: an object that plans jobs, runs one job into typed rows, and summarises rows into tables.

    settings(table) -> frozen settings dataclass        (one validator: bench.settings.validate)
    plan(profile, device, settings, planned) -> [Job]     (with `depends_on` prerequisites)
    run(job, ctx) -> [row]                                (rows of `row_type`, checked by the runner)
    summarize(frame) -> {table name: DataFrame}           (the only place a protocol's numbers are aggregated)
    headline(tables) -> DataFrame indexed by model        (its columns of the cross-protocol headline)

A protocol never imports `reports`; the report only formats the tables `summarize` returned.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from bench.jobs import Job, RunContext
from bench.schema import Row
from bench.settings import as_dict, validate

if TYPE_CHECKING:
    from bench.profiles import Profile


@dataclass(frozen=True)
class TableSpec:
    """A documented summary table: its columns, in order, and what each means."""

    name: str
    title: str
    description: str
    columns: Mapping[str, str]

    def frame(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame | None = None) -> pd.DataFrame:
        """`rows` as a DataFrame with exactly this table's columns, in order (missing ones empty)."""
        df = pd.DataFrame(rows if rows is not None else [])
        for col in self.columns:
            if col not in df.columns:
                df[col] = None
        extra = set(df.columns) - set(self.columns)
        if extra:
            raise KeyError(f"table {self.name!r} got undeclared column(s) {sorted(extra)}")
        return df[list(self.columns)].reset_index(drop=True)


class Protocol(ABC):
    """Base class of every protocol (registered with `bench.protocols.register_protocol`)."""

    name: ClassVar[str]
    settings_type: ClassVar[type]
    row_type: ClassVar[type] = Row
    description: ClassVar[str] = ""
    # protocols whose jobs are planned first (their jobs can be prerequisites of this one's)
    after: ClassVar[tuple[str, ...]] = ()
    # timing-sensitive jobs: executors give them a device of their own (a whole Slurm node)
    exclusive_device: ClassVar[bool] = False
    tables: ClassVar[Mapping[str, TableSpec]] = {}

    def settings(self, table: Mapping[str, Any] | None) -> Any:
        return validate(self.settings_type, table, self.name)

    def settings_of(self, job: Job) -> Any:
        """The job's (already validated) settings as the dataclass."""
        return self.settings_type(**job.settings)

    def job(self, model: str, dataset: str | None, seed: int, device: str, settings: Any,
            depends_on: Sequence[str] = ()) -> Job:
        return Job(protocol=self.name, model=model, dataset=dataset, seed=seed, device=device,
                   settings=as_dict(settings), depends_on=tuple(depends_on))

    @abstractmethod
    def plan(self, profile: Profile, device: str, settings: Any, planned: Sequence[Job]) -> list[Job]:
        """This protocol's jobs for `profile`; `planned` holds the jobs of the protocols in `after`."""

    @abstractmethod
    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        """Rows of one job (columns declared by `row_type`; the runner adds model, seed, ...)."""

    @abstractmethod
    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Named tables (see `tables`) from this protocol's ok rows of a run."""

    def headline(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        """This protocol's columns of the headline table (index: model), or None."""
        return None

    def data_needed(self, job: Job) -> set[tuple[str, str]]:
        """(dataset, split) pairs the job reads, opened before a sweep starts so missing data fails early."""
        return set()

"""The selfcheck's results: rows grouped by section, written as JSON and as a markdown table."""
from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass
class Row:
    section: str
    name: str
    status: str          # "pass", "fail", "info" (a measurement), "skip"
    value: str = ""      # the number(s) that decided it, human-readable
    detail: dict = dataclasses.field(default_factory=dict)


class Report:
    def __init__(self, environment: dict):
        self.environment = environment
        self.rows: list[Row] = []

    def add(self, section, name, status, value="", **detail) -> Row:
        row = Row(section, name, status, value, detail)
        self.rows.append(row)
        return row

    def skip(self, section, name, reason):
        return self.add(section, name, "skip", reason)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == "fail"]

    def to_json(self) -> dict:
        return {"environment": self.environment,
                "failures": len(self.failures),
                "rows": [dataclasses.asdict(r) for r in self.rows],
                "skipped": [f"{r.section}: {r.name} ({r.value})" for r in self.rows
                            if r.status == "skip"]}

    def to_markdown(self) -> str:
        env = self.environment
        lines = [f"# l2vsd_ext selfcheck: {env.get('device_name', env.get('device'))}", "",
                 f"torch {env.get('torch')}, build {env.get('build')}", "",
                 "| section | check | status | value |", "|---|---|---|---|"]
        for r in self.rows:
            value = str(r.value).replace("|", "/")
            lines.append(f"| {r.section} | {r.name} | {r.status} | {value} |")
        lines += ["", f"{len(self.failures)} failure(s)."]
        return "\n".join(lines) + "\n"

    def write(self, folder: str) -> tuple[str, str]:
        os.makedirs(folder, exist_ok=True)
        json_path = os.path.join(folder, "selfcheck.json")
        md_path = os.path.join(folder, "selfcheck.md")
        with open(json_path, "w") as fh:
            json.dump(self.to_json(), fh, indent=2)
        with open(md_path, "w") as fh:
            fh.write(self.to_markdown())
        return json_path, md_path

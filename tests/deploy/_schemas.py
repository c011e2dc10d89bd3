"""Run by the deploy venv's python (kubernetes-validate lives there): validate rendered manifests.

Usage: python _schemas.py MANIFESTS.yaml K8S_VERSION [K8S_VERSION ...]
Prints one JSON object per resource and version: kind, name, version, status (passed, failed or
no-schema) and the errors. Strict: properties unknown to the schema are errors.
"""

from __future__ import annotations

import json
import sys

import kubernetes_validate
import yaml


def main(path: str, versions: list[str]) -> None:
    with open(path) as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    for version in versions:
        for doc in docs:
            row = {"kind": doc.get("kind"), "name": doc.get("metadata", {}).get("name"), "version": version}
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                row.update(status="passed", errors=[])
            except kubernetes_validate.SchemaNotFoundError:
                row.update(status="no-schema", errors=[])
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(part) for part in exc.path) or "(root)"
                row.update(status="failed", errors=[f"{where}: {exc.message}"])
            print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

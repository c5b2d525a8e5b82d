#!/usr/bin/env python3
"""Validates the KEDA objects of rendered manifests against the CRD schemas kept beside this
script, and writes every other object to a file for kubernetes-validate.

    validate.py RENDERED.yaml CORE_OUT.yaml

Checks each ScaledObject and TriggerAuthentication against the openAPIV3Schema of its CRD
(keda.sh_*.yaml here) with jsonschema, strictly: a field the schema does not name is an
error, as `kubectl apply --validate=strict` makes it on a cluster (the API server would
otherwise prune it silently). Kinds with neither a kept schema nor a core schema
(ServiceMonitor) are reported and skipped. Exit code 1 on any error, with one line per error.
"""

import copy
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): HERE / "keda.sh_triggerauthentications.yaml",
}
# Kinds whose schema is not kept here and that kubernetes-validate does not know either.
UNCHECKED = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def strict(schema):
    """The CRD schema as JSON Schema: unknown fields refused, Kubernetes' extensions mapped."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if node.pop("x-kubernetes-preserve-unknown-fields", False):
            return
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            walk(node.get(key))
        for key in ("anyOf", "allOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    return schema


def load_schema(path, version):
    crd = yaml.safe_load(path.read_text())
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return strict(entry["schema"]["openAPIV3Schema"])
    raise SystemExit(f"{path.name} has no version {version}")


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: validate.py RENDERED.yaml CORE_OUT.yaml")
    rendered, core_out = sys.argv[1], sys.argv[2]
    documents = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
    schemas = {
        key: load_schema(path, key[0].split("/")[1]) for key, path in CRDS.items()
    }
    core, errors, checked = [], [], 0
    for doc in documents:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
        if key in schemas:
            validator = jsonschema.Draft7Validator(schemas[key])
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.path) or "(top)"
                errors.append(f"{rendered}: {name}: {path}: {error.message}")
            checked += 1
        elif key in UNCHECKED:
            print(f"{rendered}: {name}: no schema kept for {key[0]}, not validated")
        else:
            core.append(doc)
    pathlib.Path(core_out).write_text(yaml.safe_dump_all(core, sort_keys=False))
    for line in errors:
        print(line)
    print(f"{rendered}: {checked} KEDA objects checked against KEDA 2.16 schemas, "
          f"{len(errors)} errors; {len(core)} other objects for kubernetes-validate")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

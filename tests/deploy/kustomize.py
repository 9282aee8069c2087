"""A small kustomize renderer: the subset deploy/ uses, so the checks need no kubectl.

Supports ``resources`` (files and directories with a kustomization.yaml), strategic-merge
``patches`` (by kind and name; lists of named items merge by name; ``null`` deletes a key and
``$patch: delete`` a whole object), ``namespace``, ``labels``
(metadata only) and ``images``. When kubectl is installed, the tests also compare this output
with ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

# Kinds without a namespace (among those deploy/ uses).
CLUSTER_KINDS = frozenset({"Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding"})


def load_documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Object]:
    """The objects ``kubectl kustomize directory`` would print (in resource order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[Object] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        for body in load_documents(directory / patch["path"]):
            _apply_patch(objects, body)
    if "namespace" in kustomization:
        _set_namespace(objects, kustomization["namespace"])
    for label in kustomization.get("labels", []):
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    return objects


def _apply_patch(objects: list[Object], patch: Object) -> None:
    name = patch["metadata"]["name"]
    targets = [o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == name]
    if len(targets) != 1:
        raise ValueError(f"patch {patch['kind']}/{name} matches {len(targets)} objects")
    if patch.get("$patch") == "delete":
        objects.remove(targets[0])
        return
    merged = merge(targets[0], patch)
    targets[0].clear()
    targets[0].update(merged)


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for the fields deploy/ patches."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return result
    if _named_list(base) and _named_list(patch):
        result = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, b in enumerate(result) if b["name"] == item["name"]), None)
            if index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = merge(result[index], item)
        return result
    return copy.deepcopy(patch)


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and "name" in v for v in value)
    )


def _set_namespace(objects: list[Object], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_KINDS:
            obj["metadata"]["namespace"] = namespace


def _set_image(obj: Object, image: Object) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        if container.get("image", "").split(":")[0] == image["name"]:
            name = image.get("newName", image["name"])
            container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name

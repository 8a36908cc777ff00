"""YAML for settings files: yaml.SafeLoader (plain data only, never objects or code), refusing a
key given twice in one mapping, which PyYAML would otherwise settle silently as last-wins."""
from __future__ import annotations

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below says so
            first = None
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key '{key}' is given twice (lines {first} and {key_node.start_mark.line + 1})",
                key_node.start_mark)
        try:
            seen[key] = key_node.start_mark.line + 1
        except TypeError:
            pass
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def safe_load_unique(stream):
    """yaml.safe_load, but a duplicated key is a yaml.YAMLError naming it and its lines."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no objects, no code

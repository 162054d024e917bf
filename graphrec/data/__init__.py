"""The data stage: the input contract, readers and adapters of public formats, validation with quarantine, and
the generated shop."""

from graphrec.exports import lazy_exports

# Public names and the module that defines each, imported on first use.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "EVENTS": "schema",
        "ITEMS": "schema",
        "CONTENT": "schema",
        "IMPRESSIONS": "schema",
        "EVENT_TYPES": "schema",
        "scan_table": "readers",
        "open_dataset": "adapters",
        "read_contract_dir": "adapters",
        "validate_dataset": "validation",
        "read_validated": "validation",
        "validate_events": "validation",
        "validate_items": "validation",
        "validate_content": "validation",
        "validate_impressions": "validation",
        "validate_table": "validation",
        "generate_shop": "shop",
        "write_shop": "shop",
        "Shop": "shop",
        "InputConfig": "config",
        "ShopConfig": "config",
        "ValidationConfig": "config",
    },
)

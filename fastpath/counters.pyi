DROP_REASON_NAMES: tuple[str, ...]

"""Pure core: arrays and dataclasses in and out, no I/O, no vendor clients."""

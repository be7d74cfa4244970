"""Value serialization: pickle-5 with out-of-band buffers, read back zero-copy.

Public surface of the package; see ``codec`` for the value codec, ``layout`` for
the byte layout in shared memory, ``arrow`` for Arrow IPC, and ``context`` for
the collection of ObjectRefs contained in a value.
"""

from memlab.serialization.codec import (
    SerializedValue,
    deserialize,
    dumps_code,
    dumps_function,
    loads_function,
    serialize,
)
from memlab.serialization.context import collecting_refs, record_ref

__all__ = [
    "SerializedValue",
    "collecting_refs",
    "deserialize",
    "dumps_code",
    "dumps_function",
    "loads_function",
    "record_ref",
    "serialize",
]

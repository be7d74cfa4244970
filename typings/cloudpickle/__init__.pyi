# Stubs for the part of cloudpickle that memlab uses; cloudpickle ships no types and there is
# no stubs package. Signatures follow cloudpickle 3.1 (pickle's own where it re-exports them).
import pickle
from collections.abc import Callable
from pickle import load as load
from pickle import loads as loads
from types import ModuleType
from typing import IO, Any

__version__: str

class Pickler(pickle.Pickler):
    def __init__(
        self,
        file: IO[bytes],
        protocol: int | None = None,
        buffer_callback: Callable[[pickle.PickleBuffer], object] | None = None,
    ) -> None: ...
    def reducer_override(self, obj: Any) -> Any: ...  # pickle.Pickler's own signature

CloudPickler = Pickler

def dumps(
    obj: object,
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], object] | None = None,
) -> bytes: ...
def register_pickle_by_value(module: ModuleType) -> None: ...
def unregister_pickle_by_value(module: ModuleType) -> None: ...
def dump(
    obj: object,
    file: IO[bytes],
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], object] | None = None,
) -> None: ...

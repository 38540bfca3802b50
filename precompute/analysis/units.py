"""The unit axis of one checkpoint: every hooked MLP layer's units side by side, and the conversions on it.

Extraction concatenates the hooked layers' units into one axis of N columns (layer by layer, in block order), so
that every analysis scores all units at once. The store names a unit by (layer, unit): ``layer`` is the model's
own block index (0-based, as ``precompute.model`` numbers blocks) and ``unit`` its index inside that block's MLP.
With ``[extract] layers`` a run hooks only some blocks, so a column's position among the hooked layers is not its
block index; this one object converts between the three (column, position, block) so that no analysis does it
by hand.

Pure data (NumPy only): the analyses take it as an argument, and ``precompute.model.layout.ModelLayout`` builds
it from the model once per loaded checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnitAxis:
    """The (units,) axis of one checkpoint: hooked block ids and where each one's units start.

    Parameters
    ----------
    layer_ids : tuple of int, (layers,)
        Block index of each hooked layer, strictly increasing.
    offsets : tuple of int, (layers + 1,)
        The first column of each layer on the axis; ``offsets[-1]`` is the number of units.

    Raises
    ------
    ValueError
        When the offsets do not start at 0, decrease, or do not have one entry per layer plus one, or when the
        layer ids do not increase.
    """

    layer_ids: tuple[int, ...]
    offsets: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_ids", tuple(int(x) for x in self.layer_ids))
        object.__setattr__(self, "offsets", tuple(int(x) for x in self.offsets))
        if len(self.offsets) != len(self.layer_ids) + 1 or (self.offsets and self.offsets[0] != 0):
            raise ValueError(f"offsets {list(self.offsets)} do not start at 0 with one entry per layer, plus one")
        if any(b <= a for a, b in zip(self.layer_ids, self.layer_ids[1:])):
            raise ValueError(f"layer ids {list(self.layer_ids)} are not strictly increasing")
        if any(b < a for a, b in zip(self.offsets, self.offsets[1:])):
            raise ValueError(f"offsets {list(self.offsets)} decrease")

    @classmethod
    def from_sizes(cls, layer_ids: Sequence[int], sizes: Sequence[int]) -> UnitAxis:
        """The axis of the hooked blocks ``layer_ids``, with ``sizes`` units each.

        Parameters
        ----------
        layer_ids : sequence of int, (layers,)
            Block index of each hooked layer, strictly increasing.
        sizes : sequence of int, (layers,)
            Units of each of those layers' MLPs.

        Returns
        -------
        UnitAxis
        """
        return cls(tuple(layer_ids), tuple(np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()))

    @classmethod
    def contiguous(cls, offsets: Sequence[int]) -> UnitAxis:
        """An axis whose layers are blocks 0, 1, ... (every block hooked), from its offsets.

        Parameters
        ----------
        offsets : sequence of int, (layers + 1,)
            The first column of each layer, then the number of units.

        Returns
        -------
        UnitAxis
        """
        return cls(tuple(range(len(offsets) - 1)), tuple(offsets))

    @property
    def n_units(self) -> int:
        """The number of columns (units of all hooked layers)."""
        return self.offsets[-1]

    @property
    def n_layers(self) -> int:
        """The number of hooked layers."""
        return len(self.layer_ids)

    @property
    def sizes(self) -> np.ndarray:
        """(layers,) int64 units per hooked layer."""
        return np.diff(np.asarray(self.offsets, dtype=np.int64))

    def check_width(self, n_columns: int, what: str) -> None:
        """Refuse an array whose unit axis is not this one.

        Parameters
        ----------
        n_columns : int
            The length of the array's unit axis.
        what : str
            The array's name, for the message.

        Raises
        ------
        ValueError
            When ``n_columns`` is not `n_units`.
        """
        if int(n_columns) != self.n_units:
            raise ValueError(f"{what} has {int(n_columns)} unit columns, the unit axis {self.n_units}")

    def position_of(self, columns: np.ndarray | Sequence[int]) -> np.ndarray:
        """Position among the hooked layers of each column.

        Parameters
        ----------
        columns : array of int, (columns,)
            Columns on the unit axis, each in 0 .. `n_units` - 1.

        Returns
        -------
        ndarray of int64, (columns,)
            0 .. `n_layers` - 1: the index into `layer_ids` of each column's layer.

        Raises
        ------
        IndexError
            When a column lies outside the axis.
        """
        cols = np.asarray(columns, dtype=np.int64)
        if cols.size and (cols.min() < 0 or cols.max() >= self.n_units):
            raise IndexError(f"unit column out of range 0..{self.n_units - 1}")
        return np.searchsorted(np.asarray(self.offsets, dtype=np.int64), cols, side="right") - 1

    def layer_of(self, columns: np.ndarray | Sequence[int]) -> np.ndarray:
        """Block index of each column: what the store writes in ``layer``.

        Parameters
        ----------
        columns : array of int, (columns,)
            Columns on the unit axis.

        Returns
        -------
        ndarray of int32, (columns,)
        """
        return np.asarray(self.layer_ids, dtype=np.int32)[self.position_of(columns)]

    def unit_of(self, columns: np.ndarray | Sequence[int]) -> np.ndarray:
        """Index of each column inside its layer's MLP: what the store writes in ``unit``.

        Parameters
        ----------
        columns : array of int, (columns,)
            Columns on the unit axis.

        Returns
        -------
        ndarray of int32, (columns,)
        """
        cols = np.asarray(columns, dtype=np.int64)
        return (cols - np.asarray(self.offsets, dtype=np.int64)[self.position_of(cols)]).astype(np.int32)

    def position(self, layer: int) -> int:
        """The position of one block among the hooked layers.

        Parameters
        ----------
        layer : int
            A block index.

        Returns
        -------
        int
            Its index into `layer_ids`.

        Raises
        ------
        KeyError
            When the block is not hooked.
        """
        try:
            return self.layer_ids.index(int(layer))
        except ValueError:
            raise KeyError(f"layer {layer} is not hooked (hooked: {list(self.layer_ids)})") from None

    def columns(self, layers: np.ndarray | Sequence[int], units: np.ndarray | Sequence[int]) -> np.ndarray:
        """Column of each (block, unit) pair: the inverse of `layer_of` and `unit_of`.

        Parameters
        ----------
        layers : array of int, (pairs,)
            Block index of each pair, as the store's ``layer``.
        units : array of int, (pairs,)
            Index inside that block's MLP, as the store's ``unit``.

        Returns
        -------
        ndarray of int64, (pairs,)

        Raises
        ------
        KeyError
            For a block that is not hooked.
        IndexError
            For a unit beyond its layer's width.
        """
        layers = np.asarray(layers, dtype=np.int64)
        units = np.asarray(units, dtype=np.int64)
        ids = np.asarray(self.layer_ids, dtype=np.int64)
        pos = np.searchsorted(ids, layers)
        known = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == layers) if len(ids) else layers != layers
        if not known.all():
            raise KeyError(f"layer {int(layers[~known][0])} is not hooked (hooked: {list(self.layer_ids)})")
        if units.size and (units.min() < 0 or (units >= self.sizes[pos]).any()):
            raise IndexError("unit index beyond its layer's width")
        return np.asarray(self.offsets, dtype=np.int64)[pos] + units

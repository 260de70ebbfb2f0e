"""The weight side: which tiles of a weight are empty, 2:4 or dense (``tile_map``), and the
compressed mixed-tile format the kernels read (``compressed``)."""
from .compressed import (ALLOWED_BLOCKS, FORMAT_VERSION, VALUE_DTYPES, CompressedWeight, compress, compressed_nbytes,
                         decompress, tile_map_of, validate)
from .tile_map import CLASSIFY_BLOCKS, FINE_TILE, TileMap, TileType, check_tile_map, classify_tiles

__all__ = ["ALLOWED_BLOCKS", "FORMAT_VERSION", "VALUE_DTYPES", "CompressedWeight", "compress", "compressed_nbytes",
           "decompress", "tile_map_of", "validate", "CLASSIFY_BLOCKS", "FINE_TILE", "TileMap", "TileType",
           "check_tile_map", "classify_tiles"]

"""The `predict` table: its columns (`columns`), writing it chunk by chunk and resuming it (`writer`), and the
per-person neutral baseline (`baseline`)."""

from aullava.tables.columns import (
                                    ID_COLUMNS,
                                    TEXT,
                                    WHOLE,
                                    blendshape_columns,
                                    kinds_of,
                                    landmark_columns,
                                    read_table,
                                    table_columns,
                                    to_dataframe,
                                    typed,
)
from aullava.tables.writer import PARTIAL_SUFFIX, TableWriter, resume_rows, rewrite, written_pictures

__all__ = ["ID_COLUMNS", "PARTIAL_SUFFIX", "TEXT", "WHOLE", "TableWriter", "blendshape_columns", "kinds_of",
           "landmark_columns", "read_table", "resume_rows", "rewrite", "table_columns", "to_dataframe", "typed",
           "written_pictures"]

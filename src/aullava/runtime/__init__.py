"""What every part needs from the machine: the offline assets and their cache (`assets`, `asset_cache`), files
written whole or not at all and printable names (`files`), and third-party log noise kept off a normal run
(`quiet`). Imports nothing else of aullava."""

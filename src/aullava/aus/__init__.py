"""What every part agrees on about Action Units: which AUs exist and in which sets (`catalogue`), and how an answer
is written in each of the three formats (`answer_format`). Imports nothing else of aullava."""

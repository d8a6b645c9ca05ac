"""Stream processors of the pipeline and the pure decision core they apply."""

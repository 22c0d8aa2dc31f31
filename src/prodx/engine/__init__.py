"""The reasoning: posterior over conditions and the next best test, pure functions of
findings and the knowledge base."""

"""rerank: refinement of the top-1k shortlist (alpha-QE, Chamfer, spatial verification, AMES).

Nothing is implemented here yet: the re-rankers are issue 5. The package exists so the
stage layout of DESIGN.md is in place and imports stay stable when they land.
"""

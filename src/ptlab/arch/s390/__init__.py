"""s390: 2K PTE tables two to a 4K page, as allocated up to v6.6 (pgalloc.py)."""

"""The mm: address spaces, page tables, and the generic paths that free them."""

"""The ``ppec`` command line: thin adapters over the library, one sub-app per noun."""

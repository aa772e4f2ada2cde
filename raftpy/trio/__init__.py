"""The Trio network runtime: the only package (besides tests) that imports trio."""

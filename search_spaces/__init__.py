"""The shipped search spaces, one ``<defense>.yaml`` each (see README.md here); installed as the data
package ``tune_div.search_spaces`` and read by :mod:`tune_div.search.space`."""

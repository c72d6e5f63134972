"""The local web explorer: a JSON API and the static page that draws it."""

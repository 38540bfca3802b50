"""What a run is asked about: concept sets (:mod:`.concepts`: load, validate) and the built-in CLDR set
(:mod:`.cldr`)."""

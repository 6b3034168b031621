"""Building blocks of :mod:`milopyp.simulate` (import the public names from there).

``parameters``: species, defaults, presets; ``templates``: particle density maps;
``phantom``: placing filaments, vesicles, spikes and particles into a density volume.
"""

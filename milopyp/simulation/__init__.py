"""Building blocks of :mod:`milopyp.simulate` (import the public names from there).

``parameters``: species, defaults, presets; ``templates``: particle density maps;
``phantom``: placing filaments, vesicles, spikes and particles into a density volume;
``filaments``: the filaments' centre lines and tubes; ``projection``: projection and
weighted back-projection; ``imaging``: CTF, dose and noise of the tilt images.
"""

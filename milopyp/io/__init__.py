"""Reading and writing tomograms, tilt series and coordinate tables; every write is atomic."""

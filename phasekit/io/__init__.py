"""Files: safe writing (atomic replacement, locks, write probes, folders phasekit owns:
:mod:`.files`), the netCDF4 sweep file (:mod:`.netcdf`) and the finished chunks of a run
in progress (:mod:`.parts`)."""

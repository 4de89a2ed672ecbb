"""`tunelab monitor`: drift statistics (drift), features of reference data and logged traffic
(features), where the reference comes from (reference), the report renderers (report) and run()."""

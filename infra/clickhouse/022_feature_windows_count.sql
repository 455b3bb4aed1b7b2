-- feature_windows.count counts every event of the window: the valid values are
-- count - missing - invalid (drift_scores.count); 004 said "with a valid value".
ALTER TABLE {database}.feature_windows
    COMMENT COLUMN count 'events in the window (valid values = count - missing - invalid; a feature no event carried has count = missing)';

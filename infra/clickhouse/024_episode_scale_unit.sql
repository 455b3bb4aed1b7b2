-- A numeric feature's episode names what changed: a location shift (unit 'sd', as before) or a
-- change in scale (unit 'sd_ratio': the values' sd over the reference's, 0 for a stuck sensor, 3
-- for a tripled noise sd). Before, every numeric magnitude was a mean shift in sd, so a stuck
-- sensor read as a 0.08 sd shift. Rows written before keep 'sd' and read as they did. An episode
-- whose change becomes another kind (a shift that then sticks) escalates with reason 'kind'.
ALTER TABLE {database}.drift_episodes
    COMMENT COLUMN magnitude 'current effect vs the training reference, in unit: mean of the open shards'' estimates in the unit of the larger weight, weighted by their values seen',
    COMMENT COLUMN peak_magnitude 'largest effect seen in the episode in the current unit (signed as at the peak; a ratio by its log); restarts when the unit changes',
    COMMENT COLUMN escalation_reason '''larger'', ''reversal'' or ''kind'' (the change read in a unit no earlier estimate had, e.g. a shift that then sticks: sd -> sd_ratio); empty if no escalation',
    COMMENT COLUMN unit '''sd'' signed mean shift in reference standard deviations (a change in location), ''sd_ratio'' sd of the values / reference sd (a change in scale: 0 = stuck), ''psi'' for categorical features, ''rate_ratio'' error rate / reference error rate';
ALTER TABLE {database}.drift_alerts
    COMMENT COLUMN reason 'opened: alarm; escalated: larger | reversal | kind; closed: back_to_reference | new_profile',
    COMMENT COLUMN unit 'sd | sd_ratio | psi | rate_ratio, as in drift_episodes';

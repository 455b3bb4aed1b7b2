-- Why a multivariate_drift row has no domain classifier AUC: a NULL auc alone did not tell a
-- low-traffic model (its windows never reach the 200 sampled rows the classifier needs) from a
-- window size the classifier does not run on.
ALTER TABLE {database}.multivariate_drift
    ADD COLUMN IF NOT EXISTS domain_status LowCardinality(String) DEFAULT '' COMMENT 'the domain classifier on this window: ''scored'' (auc set), else why not: ''other_window_size'' (it runs on multivariate.domain_window_s, default the retrain policy''s size), ''domain_every'' (not a k-th window of its grid), ''too_few_rows'' (fewer than 200 sampled rows: give the model a larger multivariate.domain_window_s), ''no_scikit_learn''; empty on rows from before this column' AFTER top_importances;

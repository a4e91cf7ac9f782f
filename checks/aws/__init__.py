"""AWS monitoring: accounts and sessions, the CloudWatch catalogue, discovery, collection.

Nothing in this package imports boto3 at module level except the modules that
only an AWS check reaches at run time, so validating a config that names an AWS
check type never imports boto3 (tested).

- :mod:`checks.aws.session` — accounts, AssumeRole with refresh, clients, errors
  explained for a person;
- :mod:`checks.aws.catalogue` — SPEC §2's component table as data
  (``catalogue.yaml``) and the per-component / per-resource / per-tag overrides;
- :mod:`checks.aws.discovery` — resources by id and by tag, describe calls, ListMetrics;
- :mod:`checks.aws.plan` — watches (one per result) from resources and items, verdicts;
- :mod:`checks.aws.collect` — GetMetricData in batches of up to 500 queries;
- :mod:`checks.aws.ec2` — instances and their status for ec2_status / ec2_events;
- :mod:`checks.aws.cost` — API calls and metrics requested, and what they cost;
- :mod:`checks.aws.setup` — the initial maintenance setup (SNS topic, alarms);
- :mod:`checks.aws.publish` — host metrics to CloudWatch (CWAgent names).
"""

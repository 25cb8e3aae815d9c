-- Infinity's VMR names are unique across the whole platform, so ours are unique across all
-- integrations, not only within one (policy answers and pushes use them as service names).
CREATE UNIQUE INDEX conference_name_global ON conference (name);

-- wrk: PVC creates against Stowage; generateName makes every POST a new claim.
-- STOWAGE_TOKEN and STOWAGE_NS come from the environment.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("STOWAGE_TOKEN")
wrk.path = "/api/v1/namespaces/" .. (os.getenv("STOWAGE_NS") or "bench") .. "/persistentvolumeclaims"
wrk.body = '{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"generateName":"claim-","labels":{"bench":"wrk"}},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}},"storageClassName":""}}'
-- No response() callback: with one, wrk hands every response to Lua, which costs the driver
-- CPU on the same two cores. wrk itself reports non-2xx answers, and the script fails on them.

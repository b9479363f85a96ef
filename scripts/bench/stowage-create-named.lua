-- wrk: PVC creates against Stowage with names in order (claim-<thread>-<n>), as
-- `cargo bench --bench api` makes them, to compare with generateName's random suffixes.
local thread_id = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
local counter = 0
local path = "/api/v1/namespaces/" .. (os.getenv("STOWAGE_NS") or "bench") .. "/persistentvolumeclaims"
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("STOWAGE_TOKEN") }
function request()
  counter = counter + 1
  local body = '{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"claim-' .. tid .. '-' .. string.format("%08d", counter) .. '","labels":{"bench":"wrk"}},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}},"storageClassName":""}}'
  return wrk.format("POST", path, headers, body)
end

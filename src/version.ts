// The pipemesh release these modules belong to: what `pipemesh --version` prints and what an agent
// tells its coordinator (shown by `pipemesh agents`). Kept equal to package.json's version by a
// test; the control protocol's compatibility is its own number (CONTROL_REVISION).

export const PIPEMESH_VERSION = '0.3.0'

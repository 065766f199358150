/*
 * criterion shim: parameterized tests are not supported. Without this file
 * the system header would be found instead and clash with the shim.
 */
#error "the TSan criterion shim (tests/unit/tsan) has no ParameterizedTest; extend it first"

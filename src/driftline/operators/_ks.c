/* The two-sided Kolmogorov-Smirnov distribution's exact small-sample branch and its Pelz-Good
 * series in C (driftline.operators.drift runs numpy's and scipy's without it).
 *
 * pelz_good_sf(n, x) is 1 - the Pelz-Good approximation of P(D_n <= x), term for term as scipy's
 * _kolmogn_PelzGood (libm's exp and pow where numpy calls them on scalars; its sums of a few terms
 * added as numpy adds them). scipy takes it for n > 140 and n x^2 < 2.2 unless n x^1.5 <= 1.4:
 * most tested features of a window without drift, ~50-120 us each through scipy's Python.
 *
 * durbin_sf(n, x) is 1 - P(D_n <= x) by Durbin's matrix (Marsaglia, Tsang and Wang's form), step
 * for step as scipy's _kolmogn_DMTW but its matrix products added in index order (numpy's go to
 * BLAS; the cdf agrees within ~1e-13). scipy takes it for n <= 140 and n x^2 <= 0.754693 and for
 * n > 140 where n x^1.5 <= 1.4: the other half of a small window's features, ~300 us each.
 *
 * pomeranz_sf(n, x) is P(D_n >= x) by Pomeranz's recursion, step for step as scipy's
 * _kolmogn_Pomeranz and drift._pomeranz_cdf: the same powers, the same rows and bounds, the same
 * rescaling by 2**128 against underflow, the product by n! in long double once it was rescaled. Only
 * the sums of products of a row's convolution are added in index order here, where numpy's
 * correlate hands them to BLAS: the two agree within a few units in the last place (the tests hold
 * them to 1e-12 relative). scipy takes this branch for n <= 140 and 0.754693 < n x^2 <= 4, where it
 * costs ~1 ms in Python (2n + 1 rows of small numpy calls), and stage 2 meets it in every tested
 * feature of a window whose effective size is that small: ~20 ms a 25-feature window.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define E128 128
/* what a method sets in *failed where it returns no value (the Python wrapper: MemoryError, None) */
#define NO_MEMORY 1
#define DECLINED 2 /* not this method's ranges: the caller takes scipy's */

/* 1 - cdf clipped to [0, 1], the cdf being ``mantissa`` times 2**expnt, in long double where the
 * recursion widened it (numpy's scalars there); clipping the cdf first changes nothing, as numpy's
 * two clips give the same */
static double survival(double mantissa, long double wide, int widened, long expnt) {
    if (widened) {
        long double cdf = expnt != 0 ? ldexpl(wide, (int)expnt) : wide;
        long double out = 1.0L - cdf;
        return (double)(out < 0.0L ? 0.0L : (out > 1.0L ? 1.0L : out));
    }
    double cdf = expnt != 0 ? ldexp(mantissa, (int)expnt) : mantissa;
    double out = 1.0 - cdf;
    return out < 0.0 ? 0.0 : (out > 1.0 ? 1.0 : out);
}

static double pomeranz(long n, double x, int *failed) {
    double t = (double)n * x;
    long ll = (long)floor(t);
    double f = 1.0 * (t - (double)ll);
    double g = f < 1.0 - f ? f : 1.0 - f;
    int ceilf = f > 0 ? 1 : 0, roundf = f > 0.5 ? 1 : 0;
    long npwrs = 2 * (ll + 1);
    double *powers = malloc(sizeof(double) * 3 * (size_t)npwrs);
    double *v0 = calloc((size_t)npwrs, sizeof(double)), *v1 = calloc((size_t)npwrs, sizeof(double));
    if (powers == NULL || v0 == NULL || v1 == NULL) {
        free(powers);
        free(v0);
        free(v1);
        *failed = NO_MEMORY;
        return 0.0;
    }
    /* (g/n)^m/m!, (2g/n)^m/m!, ((1-2g)/n)^m/m!: each the previous times the step, over m */
    double steps[3] = {g / (double)n, 2 * g / (double)n, (1 - 2 * g) / (double)n};
    for (int row = 0; row < 3; row++) {
        double *p = powers + row * npwrs;
        p[0] = 1.0;
        for (long m = 1; m < npwrs; m++)
            p[m] = p[m - 1] * steps[row] / (double)m;
    }
    const double scale_up = ldexp(1.0, E128), scale_down = ldexp(1.0, -E128);
    long expnt = 0;
    v1[0] = 1.0;
    long v0s = 0, v1s = 0;
    long j1 = -ll - ceilf + 1;
    if (j1 < 0)
        j1 = 0;
    long last = 2 * n + 1;
    for (long i = 1; i <= last; i++) {
        long k1 = j1, j2;
        double *swap = v0;
        v0 = v1;
        v1 = swap;
        long swaps = v0s;
        v0s = v1s;
        v1s = swaps;
        memset(v1, 0, sizeof(double) * (size_t)npwrs);
        long half = (i + 1) / 2;
        if ((i + 1) % 2) {
            j1 = half - ll;
            j2 = half + ll + roundf - 1;
        } else if (half == n + 1) {
            j1 = n - ll - ceilf + 1;
            j2 = n + ll + ceilf - 1;
        } else {
            j1 = half - ll - roundf;
            j2 = half + ll - 1 + ceilf - 1;
        }
        if (j1 < 0)
            j1 = 0;
        if (j2 > n)
            j2 = n;
        const double *p = powers + (i == 1 || i == last ? 0 : (i % 2 ? 1 : 2)) * npwrs;
        long length = j2 - k1 + 1;
        if (length <= 0)
            continue;
        if (k1 - v0s < 0 || k1 - v0s + length > npwrs || j2 - j1 + 1 > npwrs) {
            *failed = DECLINED; /* a slice numpy would clip: not this recursion's ranges */
            break;
        }
        const double *a = v0 + (k1 - v0s);
        /* correlate(a, reversed powers' last `length`, "full")[j1 - k1 + r]: with b[q] = p[length-1-q],
         * sum over q of a[q + lag] * b[q], lag = j1 - k1 + r - (length - 1) */
        double top = 0.0;
        for (long r = 0; r <= j2 - j1; r++) {
            long lag = j1 - k1 + r - (length - 1);
            long q0 = lag < 0 ? -lag : 0, q1 = lag < 0 ? length : length - lag;
            double sum = 0.0;
            for (long q = q0; q < q1; q++)
                sum += a[q + lag] * p[length - 1 - q];
            v1[r] = sum;
            if (sum > top)
                top = sum;
        }
        if (0 < top && top < scale_down) { /* scale to avoid underflow */
            for (long r = 0; r < npwrs; r++)
                v1[r] *= scale_up;
            expnt -= E128;
        }
        v1s = v0s + j1 - k1;
    }
    if (*failed || n - v1s < 0 || n - v1s >= npwrs) {
        free(powers);
        free(v0);
        free(v1);
        if (!*failed)
            *failed = DECLINED;
        return 0.0;
    }
    double ans = v1[n - v1s];
    free(powers);
    free(v0);
    free(v1);
    /* times n!: in double until a rescale, from then in long double (numpy's scalars there) */
    long double wide = 0.0L;
    int widened = 0;
    for (long m = 1; m <= n; m++) {
        if (!widened && fabs(ans) > scale_up) {
            wide = (long double)ans * (long double)scale_down;
            widened = 1;
            expnt += E128;
        } else if (widened && fabsl(wide) > (long double)scale_up) {
            wide *= (long double)scale_down;
            expnt += E128;
        }
        if (widened)
            wide *= (long double)m;
        else
            ans *= (double)m;
    }
    return survival(ans, wide, widened, expnt);
}

/* scipy.stats._ksstats' constants, as their doubles */
#define PI_SQUARED 9.869604401089358
#define PI_FOUR 97.40909103400242
#define PI_SIX 961.3891935753043
#define SQRT2PI 2.5066282746310002
#define SQRT3 1.7320508075688772
#define PI 3.141592653589793
#define MAX_TERMS 64

/* numpy's sum of a 1-d array: the first value, plus the rest by its pairwise loop (under 8: in
 * order; else 8 running sums of every 8th, joined in pairs, then the remainder in order) */
static double numpy_sum(const double *a, int n) {
    if (n <= 0)
        return 0.0;
    const double *rest = a + 1;
    int m = n - 1;
    double res;
    if (m < 8) {
        res = 0.0;
        for (int i = 0; i < m; i++)
            res += rest[i];
    } else {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = rest[j];
        int i;
        for (i = 8; i < m - (m % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += rest[i + j];
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < m; i++)
            res += rest[i];
    }
    return a[0] + res;
}

/* declined where the terms would not fit */
static double pelz_good(long n, double x, int *failed) {
    double z = sqrt((double)n) * x;
    double zsquared = pow(z, 2), zthree = pow(z, 3), zfour = pow(z, 4), zsix = pow(z, 6);
    double qlog = -PI_SQUARED / 8 / zsquared;
    if (qlog < -708)
        return survival(0.0, 0.0L, 0, 0);
    double q = exp(qlog);
    double k1a = -zsquared, k1b = PI_SQUARED / 4;
    double k2a = 6 * zsix + 2 * zfour;
    double k2b = (2 * zfour - 5 * zsquared) * PI_SQUARED / 4;
    double k2c = PI_FOUR * (1 - 2 * zsquared) / 16;
    double k3d = PI_SIX * (5 - 30 * zsquared) / 64;
    double k3c = PI_FOUR * (-60 * zsquared + 212 * zfour) / 16;
    double k3b = PI_SQUARED * (135 * zfour - 96 * zsix) / 4;
    double k3a = -30 * zsix - 90 * pow(z, 8);
    double K[4] = {0.0, 0.0, 0.0, 0.0};
    long maxk = (long)ceil(16 * z / PI);
    if (maxk < 1 || maxk > MAX_TERMS) {
        *failed = DECLINED;
        return 0.0;
    }
    for (long k = maxk; k > 0; k--) { /* a Horner scheme over the odd integers */
        double m = (double)(2 * k - 1);
        double msquared = m * m, mfour = msquared * msquared, msix = mfour * msquared; /* exact */
        double qpower = pow(q, (double)(8 * k));
        double coeffs[4] = {1.0, k1a + k1b * msquared, k2a + k2b * msquared + k2c * mfour,
                            k3a + k3b * msquared + k3c * mfour + k3d * msix};
        for (int j = 0; j < 4; j++) {
            K[j] *= qpower;
            K[j] += coeffs[j];
        }
    }
    double divisors[4] = {z, 6 * zfour, 72 * pow(z, 7), 6480 * pow(z, 10)};
    for (int j = 0; j < 4; j++) {
        K[j] *= q;
        K[j] *= SQRT2PI;
        K[j] /= divisors[j];
    }
    /* the other sums, over all integers k (maxk down to 1, as numpy's arange) */
    double q2 = exp(-PI_SQUARED / 2 / zsquared);
    double sqrt3z = SQRT3 * z;
    double k2terms[MAX_TERMS], k3terms[MAX_TERMS];
    for (long k = maxk, i = 0; k > 0; k--, i++) {
        double ksquared = (double)(k * k), kspi = PI * (double)k;
        double qpwers = pow(q2, ksquared);
        k2terms[i] = ksquared * qpwers;
        k3terms[i] = (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwers;
    }
    double k2extra = numpy_sum(k2terms, (int)maxk);
    k2extra *= PI_SQUARED * SQRT2PI / (-36 * zthree);
    K[2] += k2extra;
    double k3extra = numpy_sum(k3terms, (int)maxk);
    k3extra *= PI_SQUARED * SQRT2PI / (216 * zsix);
    K[3] += k3extra;
    for (int j = 0; j < 4; j++)
        K[j] /= pow((double)n * 1.0, (double)j / 2.0);
    return survival(((K[0] + K[1]) + K[2]) + K[3], 0.0L, 0, 0); /* Python's sum: 0 + K0 is K0 */
}

/* (n, x) of a call: 0 and a ValueError unless 1 <= n <= 100000 and 0 < x < 1 */
static int parse_nx(PyObject *args, const char *name, long *n, double *x) {
    if (!PyArg_ParseTuple(args, "ld", n, x))
        return 0;
    if (*n < 1 || *n > 100000 || !(*x > 0.0 && *x < 1.0)) {
        PyErr_Format(PyExc_ValueError, "%s: n must be 1..100000 and 0 < x < 1", name);
        return 0;
    }
    return 1;
}

#define MAX_DURBIN 512 /* the matrix's order m = 2k - 1, k = ceil(n x): scipy's ranges stay far below */

static void matmul(const double *a, const double *b, double *out, long m) {
    for (long i = 0; i < m; i++)
        for (long j = 0; j < m; j++) {
            double sum = 0.0;
            for (long l = 0; l < m; l++)
                sum += a[i * m + l] * b[l * m + j];
            out[i * m + j] = sum;
        }
}

/* declined where the matrix would be past MAX_DURBIN */
static double durbin(long n, double d, int *failed) {
    double nd = (double)n * d;
    if (nd <= 0.5)
        return 1.0;
    long k = (long)ceil(nd);
    double h = (double)k - nd;
    long m = 2 * k - 1;
    if (m > MAX_DURBIN) {
        *failed = DECLINED;
        return 0.0;
    }
    size_t cells = (size_t)(m * m);
    double *H = calloc(cells, sizeof(double)), *Hpwr = calloc(cells, sizeof(double));
    double *tmp = malloc(cells * sizeof(double)), *v = malloc((size_t)m * sizeof(double));
    double *w = malloc((size_t)m * sizeof(double));
    if (!H || !Hpwr || !tmp || !v || !w) {
        free(H);
        free(Hpwr);
        free(tmp);
        free(v);
        free(w);
        *failed = NO_MEMORY;
        return 0.0;
    }
    /* v[j] = (1 - h^(j+1)) / (j+1)! but the last, w[j] = 1/j! */
    double fac = 1.0;
    for (long j = 1; j <= m; j++) {
        v[j - 1] = 1.0 - pow(h, (double)j);
        w[j - 1] = fac;
        fac /= (double)j;
        v[j - 1] *= fac;
    }
    double lower = 2 * h - 1.0 > 0 ? 2 * h - 1.0 : 0.0;
    double tt = pow(lower, (double)m) - 2 * pow(h, (double)m);
    v[m - 1] = (1.0 + tt) * fac;
    for (long i = 1; i < m; i++)
        for (long r = i - 1; r < m; r++)
            H[r * m + i] = w[r - (i - 1)];
    for (long r = 0; r < m; r++)
        H[r * m] = v[r];
    for (long c = 0; c < m; c++)
        H[(m - 1) * m + c] = v[m - 1 - c];
    for (long i = 0; i < m; i++)
        Hpwr[i * m + i] = 1.0;
    const double scale_up = ldexp(1.0, E128), scale_down = ldexp(1.0, -E128);
    long expnt = 0, Hexpnt = 0, nn = n;
    while (nn > 0) {
        if (nn % 2) {
            matmul(Hpwr, H, tmp, m);
            memcpy(Hpwr, tmp, cells * sizeof(double));
            expnt += Hexpnt;
        }
        matmul(H, H, tmp, m);
        memcpy(H, tmp, cells * sizeof(double));
        Hexpnt *= 2;
        if (fabs(H[(k - 1) * m + (k - 1)]) > scale_up) {
            for (size_t c = 0; c < cells; c++)
                H[c] /= scale_up;
            Hexpnt += E128;
        }
        nn /= 2;
    }
    double p = Hpwr[(k - 1) * m + (k - 1)];
    free(H);
    free(Hpwr);
    free(tmp);
    free(v);
    free(w);
    /* times n!/n^n: in double until a rescale, from then in long double (numpy's scalars there) */
    long double wide = 0.0L;
    int widened = 0;
    for (long i = 1; i <= n; i++) {
        if (widened) {
            wide = (long double)i * wide / (long double)n;
            if (fabsl(wide) < (long double)scale_down) {
                wide *= (long double)scale_up;
                expnt -= E128;
            }
        } else {
            p = (double)i * p / (double)n;
            if (fabs(p) < scale_down) {
                wide = (long double)p * (long double)scale_up;
                widened = 1;
                expnt -= E128;
            }
        }
    }
    return survival(p, wide, widened, expnt);
}

/* a method called from Python: its survival function, None where it declined */
static PyObject *call(PyObject *args, const char *name, double (*method)(long, double, int *)) {
    long n;
    double x;
    if (!parse_nx(args, name, &n, &x))
        return NULL;
    int failed = 0;
    double out = method(n, x, &failed);
    if (failed == NO_MEMORY)
        return PyErr_NoMemory();
    if (failed)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(out);
}

static PyObject *durbin_sf(PyObject *self, PyObject *args) {
    (void)self;
    return call(args, "durbin_sf", durbin);
}

static PyObject *pelz_good_sf(PyObject *self, PyObject *args) {
    (void)self;
    return call(args, "pelz_good_sf", pelz_good);
}

static PyObject *pomeranz_sf(PyObject *self, PyObject *args) {
    (void)self;
    return call(args, "pomeranz_sf", pomeranz);
}

static PyMethodDef methods[] = {
    {"durbin_sf", durbin_sf, METH_VARARGS,
     "durbin_sf(n, x): 1 - P(D_n <= x) by Durbin's matrix (scipy's for n x^2 <= 0.754693 at n <= 140, "
     "n x^1.5 <= 1.4 above); None where its matrix would be past MAX_DURBIN."},
    {"pelz_good_sf", pelz_good_sf, METH_VARARGS,
     "pelz_good_sf(n, x): 1 - the Pelz-Good approximation of P(D_n <= x) (scipy's for n > 140); None "
     "where it would take more terms than this keeps."},
    {"pomeranz_sf", pomeranz_sf, METH_VARARGS,
     "pomeranz_sf(n, x): P(D_n >= x) by Pomeranz's recursion (scipy's branch for n <= 140); None "
     "where the recursion would read outside its rows (not in that branch's ranges)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_ks", "The KS distribution's Durbin, Pomeranz and Pelz-Good methods in C.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ks(void) { return PyModule_Create(&module_def); }
